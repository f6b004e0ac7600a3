"""Serving: an OpenAI-compatible HTTP API and a web chat page (`python -m dimgpt serve`).

`engine` decodes concurrent requests together (continuous batching); `worker` runs it in a process
of its own, as the command does; `api` is the HTTP layer; `chat.html` the page, one static file
served at `/`.
"""
