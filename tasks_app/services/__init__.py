"""Domain logic: every state change of the orchestrator is one function here."""
