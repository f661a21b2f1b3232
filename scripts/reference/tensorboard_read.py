"""TensorBoard's own reader on dn's event-file fixture (tests/fixtures/tensorboard/): every scalar it reads,
by tag, as [step, value], written to read_by_tensorboard.json for crates/dn-worker/tests/tensorboard.rs."""

import json
import sys
from pathlib import Path

import tensorboard
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

fixtures = Path(sys.argv[1])
accumulator = EventAccumulator(str(fixtures), size_guidance={"scalars": 0})
accumulator.Reload()
scalars = {
    tag: [[event.step, event.value] for event in accumulator.Scalars(tag)]
    for tag in sorted(accumulator.Tags()["scalars"])
}
out = {
    "reader": f"tensorboard {tensorboard.__version__} EventAccumulator",
    "files": sorted(p.name for p in fixtures.glob("events.out.tfevents.*")),
    "scalars": scalars,
}
(fixtures / "read_by_tensorboard.json").write_text(json.dumps(out, indent=1) + "\n")
print(f"{sum(len(v) for v in scalars.values())} scalars under {len(scalars)} tags")
