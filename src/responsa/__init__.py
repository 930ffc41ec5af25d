"""Responsa: a self-hosted OpenAI / Azure OpenAI Responses API server in front of any model."""

__version__ = "0.1.0"
