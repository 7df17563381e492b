"""Activities: thin adapters around one outside system each. The only code that touches the world."""
