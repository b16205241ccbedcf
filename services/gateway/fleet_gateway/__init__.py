"""The HTTP gateway: OpenAI- and Anthropic-compatible APIs that turn each request into a Job."""
