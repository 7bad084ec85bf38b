"""The LLM layer: one ``ChatModel`` protocol, OpenAI-compatible endpoints and an embedded offline model."""
