"""Jinja prompt templates: the sandbox and renderer, message building, `cai render` previews."""
