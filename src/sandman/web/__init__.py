"""The web: the portal and the apps origin (JupyterLab and VS Code through Sandman)."""
