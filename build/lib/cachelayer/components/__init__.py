"""Pulumi ComponentResources: each turns a plan from the pure core into resources."""
