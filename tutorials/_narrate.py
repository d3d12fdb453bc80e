"""Printing helpers shared by the tutorials (not a tutorial itself): section headings, a note
with the value it is about, and an error shown on purpose."""


def section(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}")


def show(note: str, value=None) -> None:
    """Print a note and, on the next lines, the value it is about."""
    print(f"\n# {note}")
    if value is not None:
        print(value)


def refused(note: str, fn) -> None:
    """Run ``fn``, which should raise, and print the error tensorkit gives."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (showing the error is the point)
        print(f"\n# {note}\n{type(e).__name__}: {e}")
    else:
        raise AssertionError(f"expected an error: {note}")
