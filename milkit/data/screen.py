"""Check every bag of a cohort once, before splits: the unusable ones are left out with a reason."""

from collections import Counter

from rich.progress import Progress

from milkit.data.bags import BagStore
from milkit.errors import DataError


def screen_bags(store: BagStore, *, progress: bool = True) -> dict[str, str]:
    """Load each bag of ``store`` once (filling its cache): unreadable, empty, NaN/Inf bags and bags
    whose feature width differs from the cohort's are removed from ``store.paths``.

    Returns:
        ``{slide_id: reason}`` of the bags removed.
    """
    dims: dict[str, int] = {}
    bad: dict[str, str] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("checking bags", total=len(store.paths))
        for sid in list(store.paths):
            try:
                dims[sid] = int(store.load(sid)[0].shape[1])
            except DataError as exc:
                bad[sid] = str(exc).removeprefix(f"slide {sid}: ")
            bar.advance(task)
    if dims:
        width, count = Counter(dims.values()).most_common(1)[0]
        for sid, d in dims.items():
            if d != width:
                bad[sid] = (f"features are {d} wide but {count} other slide(s) have {width} (another extractor?); "
                            f"file {store.paths[sid]}")
    for sid in bad:
        store.paths.pop(sid, None)
        store.forget(sid)
    return bad
