"""The CDN: Cloudflare cache rules, CDN settings and the Cloudflare API. Imports only the package root."""
