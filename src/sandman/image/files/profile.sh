# Sandman workspace defaults for login shells.
if [ -z "${LANG:-}" ]; then
    LANG=C.UTF-8
    export LANG
fi
case ":${PATH}:" in
    *":${HOME}/.local/bin:"*) ;;
    *) PATH="${HOME}/.local/bin:${PATH}"; export PATH ;;
esac
# CUDA base images keep their tools here; sshd does not pass the image's PATH on.
if [ -d /usr/local/cuda/bin ]; then
    case ":${PATH}:" in
        *":/usr/local/cuda/bin:"*) ;;
        *) PATH="${PATH}:/usr/local/cuda/bin"; export PATH ;;
    esac
fi
