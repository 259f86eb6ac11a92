"""A live page of the grid in the Dask dashboard: ``<dashboard>/pdrflow``, served by the scheduler."""

from .plugin import PLUGIN_NAME, DashboardPlugin, client_page_link, page_link, register_dashboard

__all__ = ["PLUGIN_NAME", "DashboardPlugin", "client_page_link", "page_link", "register_dashboard"]
