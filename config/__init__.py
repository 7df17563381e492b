"""Configuration (environment and ``.env``) and logging, set up once per process."""
