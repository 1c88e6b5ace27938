"""Model providers: the built-in `echo`, `openai-completions`, `anthropic-messages`."""
