"""Benchmarks: sagents against LangGraph and the raw langchain-core floor (``python -m bench``)."""
