"""What the settings mean: topology, ACL policy, advice. Imports config and below."""
