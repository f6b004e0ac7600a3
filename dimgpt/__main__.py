from dimgpt.cli import main

if __name__ == "__main__":  # not when a spawned process (the serve command's engine) imports it as __mp_main__
	raise SystemExit(main())
