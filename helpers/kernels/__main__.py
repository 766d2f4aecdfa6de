"""`python -m helpers.kernels --check`: compile-check every kernel in kernels/ (no GPU needed)."""
import argparse
import sys

from . import compile_check, names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compile every kernels/*.cu to PTX")
    parser.add_argument("kernels", nargs="*", help="kernel stems (default: all)")
    args = parser.parse_args()
    if not args.check:
        parser.print_help()
        return 2
    failed = 0
    for name in args.kernels or names():
        ok, message = compile_check(name)
        failed += not ok
        print(f"{'✓' if ok else '✗'} {name}: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
