"""Model recipe (component -> source), loading and the tiny smoke-test model."""
