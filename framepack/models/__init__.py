"""Model recipe (component -> source), loading and the tiny smoke-test model.

The resource planner is four modules, in the order a plan is derived: `component_sizes` (weights
counted from configs), `component_costs` (per-call working sets and FLOPs), `resources` (one
configuration's plan) and `resource_choice` (the fastest one that fits a budget).
"""
