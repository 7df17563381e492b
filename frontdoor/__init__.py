"""The HTTP front door: alert webhooks -> workflows, operator endpoints -> queries and updates."""
