"""Every file a node or host receives, rendered from the templates, and the parsers of those files. Imports plan and below."""
