# Sandman environments: the web apps' tools (jupyter, code-server, node) after the
# system's, so python3 and pip stay Debian's; the notebooks' Python (and the
# framework of the pytorch and tensorflow environments) is /opt/sandman/apps/bin/python.
case ":${PATH}:" in
    *":/opt/sandman/bin:"*) ;;
    *) PATH="${PATH}:/opt/sandman/bin"; export PATH ;;
esac
