"""How a plan is carried out: through the registry API, directly in storage, or not at all."""
