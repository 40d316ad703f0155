"""Container runtimes: a narrow contract (``base``) and the Docker backend."""
