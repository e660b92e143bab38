"""A stand-in for components.tuning.trial in local-backend tests: no TensorFlow, same flags, same
output format. The objective peaks at learning_rate=0.003, dropout=0.2; FAKE_TRIAL_* environment
variables make it fail, hang or report slowly so the backend's bookkeeping can be checked fast."""

import os
import re
import sys
import time


def main() -> int:
    values = dict(re.findall(r"--([\w-]+)=(\S*)", " ".join(sys.argv[1:])))
    lr, dropout = float(values["learning_rate"]), float(values["dropout"])
    if dropout > float(os.environ.get("FAKE_TRIAL_FAIL_ABOVE", "9")):
        print("Traceback: dropout too high for this fake", flush=True)
        return 3
    if os.environ.get("FAKE_TRIAL_HANG") and dropout != 0.3:
        time.sleep(60)
    objective = 0.8 - abs(lr - 0.003) * 10 - abs(dropout - 0.2) * 0.1
    reports = int(os.environ.get("FAKE_TRIAL_REPORTS", "3"))
    for step in range(1, reports + 1):
        print(f"epoch {step}:", flush=True)
        print(f"auc={objective - 0.01 * (reports - step):.6f}", flush=True)
        print(f"loss={1 - objective:.6f}", flush=True)
        time.sleep(float(os.environ.get("FAKE_TRIAL_PAUSE", "0")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
