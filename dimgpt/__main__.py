from dimgpt.cli import main

raise SystemExit(main())
