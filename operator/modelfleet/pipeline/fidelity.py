"""Label-free fidelity: how closely an artifact's outputs follow the fp32 baseline's on the same inputs.

Per evaluation sample, the output flattened to a vector: cosine similarity with the baseline's and the
signal-to-noise ratio in dB (baseline energy over the energy of the difference). numpy only, no runtime.
"""

import numpy as np

from modelfleet.api.result import FidelityResult, OutputFidelity

# Identical outputs have an infinite SNR and JSON has no infinity: they count as MAX_SNR_DB, well above
# what float32 rounding leaves (about 140 dB). A sample with NaN or infinite values counts as the worst.
MAX_SNR_DB = 200.0
_WORST_COSINE = -1.0


def per_sample(outputs: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and SNR (dB) of each sample (first axis) of `outputs` against `reference`."""
    if outputs.shape != reference.shape:
        raise ValueError(f"outputs of shape {list(outputs.shape)} cannot be compared with the baseline's "
                         f"{list(reference.shape)}")
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    finite = np.isfinite(out).all(axis=1) & np.isfinite(ref).all(axis=1)
    out, ref = np.where(finite[:, None], out, 0.0), np.where(finite[:, None], ref, 0.0)

    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    dots = np.einsum("ij,ij->i", out, ref)
    same = np.all(out == ref, axis=1)
    # Two zero vectors are the same output; one zero vector against another has no direction in common.
    cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(same, 1.0, 0.0))
    cosine = np.clip(cosine, -1.0, 1.0)

    signal = np.sum(ref * ref, axis=1)
    noise = np.sum((out - ref) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 signal or 0 noise: handled below
        snr = 10.0 * (np.log10(signal) - np.log10(noise))
    snr = np.where(same, MAX_SNR_DB, np.nan_to_num(snr, nan=-MAX_SNR_DB, posinf=MAX_SNR_DB, neginf=-MAX_SNR_DB))
    snr = np.clip(snr, -MAX_SNR_DB, MAX_SNR_DB)
    return np.where(finite, cosine, _WORST_COSINE), np.where(finite, snr, -MAX_SNR_DB)


def fidelity(outputs: list[np.ndarray], reference: list[np.ndarray], names: list[str] | None = None) -> FidelityResult:
    """Means over the samples, and the worst sample of each measure (its index in the evaluation set), of the
    worst output (lowest mean cosine, then SNR); with several outputs, each one's means too."""
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs cannot be compared with the baseline's {len(reference)}")
    names = names or [f"output {k}" for k in range(len(outputs))]
    measured = [per_sample(o, r) for o, r in zip(outputs, reference)]
    worst = min(range(len(measured)), key=lambda k: (np.mean(measured[k][0]), np.mean(measured[k][1])))
    cosine, snr = measured[worst]
    worst_cosine, worst_snr = int(np.argmin(cosine)), int(np.argmin(snr))
    return FidelityResult(
        cosine=round(float(np.mean(cosine)), 6),
        snr_db=round(float(np.mean(snr)), 3),
        min_cosine=round(float(cosine[worst_cosine]), 6),
        min_cosine_sample=worst_cosine,
        min_snr_db=round(float(snr[worst_snr]), 3),
        min_snr_sample=worst_snr,
        output=names[worst] if len(outputs) > 1 else None,
        outputs=[OutputFidelity(name=name, cosine=round(float(np.mean(c)), 6), snr_db=round(float(np.mean(s)), 3))
                 for name, (c, s) in zip(names, measured)] if len(outputs) > 1 else None,
    )
