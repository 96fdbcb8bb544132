"""The operations console: static assets (shipped with the package, no CDN) and the live
feed of incident versions (Server-Sent Events)."""
