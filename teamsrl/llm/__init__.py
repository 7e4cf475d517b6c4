"""The LLM layer: request schema, engines, the cached and ledgered client."""
