"""``python -m sandman.image``: build the workspace image (or with ``--environment
NAME`` an environment's image) unless a current one exists."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sandman.image.build import (
    WORKSPACE_IMAGE,
    ImageBuildError,
    build_workspace_image,
    image_is_current,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandman.image",
        description="Build the Sandman workspace image unless a current one exists.",
    )
    parser.add_argument("--tag", default=WORKSPACE_IMAGE, help="image tag (%(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if it exists")
    parser.add_argument(
        "--from",
        dest="base_image",
        metavar="IMAGE",
        help="build FROM this base image with docker build instead of debootstrap",
    )
    parser.add_argument(
        "--mirror", help="Debian mirror for debootstrap (default: from /etc/apt sources)"
    )
    parser.add_argument("--suite", default="bookworm", help="Debian suite (%(default)s)")
    parser.add_argument(
        "--environment",
        metavar="NAME",
        help="build sandman-NAME:latest (jupyter, pytorch, tensorflow) and what it needs",
    )
    args = parser.parse_args(argv)
    try:
        if args.environment is not None:
            from sandman.image.environment_build import build_environment_image

            build_environment_image(
                args.environment,
                base_image=args.base_image,
                force=args.force,
                log=lambda line: print(line, flush=True),
            )
            return 0
        if not args.force and image_is_current(args.tag):
            return 0
        build_workspace_image(
            args.tag,
            base_image=args.base_image,
            mirror=args.mirror,
            suite=args.suite,
            log=lambda line: print(line, flush=True),
        )
    except ImageBuildError as exc:
        print(f"sandman image: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
