"""Published DAWN numbers (arXiv 2410.13726), printed beside ours; never computed here.
Source: ../shared/reference/dawn_facts.md."""
from __future__ import annotations

# Table 1, HDTF: DAWN's row and the ground truth's (sync, identity, head motion and blinks of real videos)
TABLE1_COLUMNS = ("FID", "FVD16", "FVD32", "LSE-C", "LSE-D", "CSIM", "BAS", "Blink/s")
TABLE1_HDTF = {"FID": 9.60, "FVD16": 60.34, "FVD32": 95.64, "LSE-C": 6.71, "LSE-D": 7.94, "CSIM": 0.790, "BAS": 0.281,
               "Blink/s": 0.86}
TABLE1_HDTF_GROUND_TRUTH = {"LSE-C": 7.95, "LSE-D": 7.33, "CSIM": 1.0, "BAS": 0.267, "Blink/s": 0.75}

# Table 5: the local attention window at sampling time (paper count: the whole span; None = full attention),
# one model, 200-frame HDTF test videos; FVD16 per window
TABLE5_FVD16 = {20: 159.19, 40: 72.93, 80: 52.05, 200: 53.48, None: 63.95}


def window_label(window) -> str:
    return "full" if window is None else str(window)
