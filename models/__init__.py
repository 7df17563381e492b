"""Pydantic types shared by the front door, the workflows and the activities (one vocabulary)."""
