"""Instruction writers: templates per task, the chat endpoint (deadline, breaker, validated replies)."""
