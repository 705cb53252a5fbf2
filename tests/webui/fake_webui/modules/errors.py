"""modules.errors: reports are recorded so tests can assert that nothing failed silently."""

reported: list[str] = []


def report(message, *, exc_info=False):
    import traceback

    reported.append(message + ("\n" + traceback.format_exc() if exc_info else ""))


def display(e, task, *, full_traceback=False):
    reported.append(f"{task}: {e}")
