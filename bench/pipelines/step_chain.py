"""A chain of trivial steps, for measuring what each step adds beyond its own work.

`bench/step_gap.py` loads this module with this folder as ZenML's source root, so the
step containers import it as the top-level module `step_chain`.
"""

from zenml import pipeline, step


@step
def first() -> int:
    """Start the chain with 1."""
    return 1


@step
def add_one(value: int) -> int:
    """Return the upstream value plus one, so the last step shows the chain ran in full."""
    return value + 1


def step_names(length: int) -> list:
    """Return the names of the steps of a chain of `length` steps, in chain order."""
    return [f"step_{position}" for position in range(1, length + 1)]


def build_chain(length: int):
    """Return a pipeline of `length` steps, each one reading the output of the one before.

    The last step returns `length`.
    """
    if length < 2:
        raise ValueError(f"a chain needs at least 2 steps, not {length}")
    names = step_names(length)

    @pipeline(name=f"step_chain_{length}", enable_cache=False)
    def step_chain() -> int:
        value = first(id=names[0])
        for name in names[1:]:
            value = add_one(value, id=name)
        return value

    return step_chain
