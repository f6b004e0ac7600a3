"""Serving: an OpenAI-compatible HTTP API and a web chat page (`python -m dimgpt serve`).

`engine` decodes concurrent requests together (continuous batching); `api` is the HTTP layer;
`chat.html` the page, one static file served at `/`.
"""
