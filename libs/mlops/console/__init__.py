"""The web console (``/ui``, served by the registry): models, versions with lineage and cards, runs side by
side with metric charts, endpoints with live traffic and reward intervals, drift scores and alerts, the
audit trail. Server-rendered HTML with inline SVG charts: no JavaScript, nothing fetched from the internet."""

from mlops.console.routes import router

__all__ = ["router"]
