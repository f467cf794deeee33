"""PretrainDataset: filtering with reasons, sample contract, small volumes, empty sets, reproducibility."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from simcrop.data.datasets import EmptyDatasetError, PretrainDataset
from simcrop.data.manifest import empty_row, write_manifest
from simcrop.data.transforms import apply, sample_seed, seed_transform
from simcrop.data.preprocessed_io import load_preprocessed, read_preprocessed, write_preprocessed
from simcrop.layout import Preprocessed

CROP = (32, 32, 16)


def make_run(root, n=5, shapes=None, not_qc=(), no_findings=(), missing=(), affine=None, fmt="nifti", masks=False):
    """n train volumes vol0.. plus one val volume; int16 HU including values outside [-1000, 1000]; fmt: how
    they are stored (preprocess.format); masks: lesion and organ maps beside them."""
    (root / "preprocessed" / "volumes").mkdir(parents=True)
    rows, lines, qc = [], [], []
    rng = np.random.default_rng(0)
    for i in range(n + 1):
        vid, split = f"vol{i}", "train" if i < n else "val"
        findings = "" if i in no_findings else "Nodule in the right lung. Heart normal."
        row = empty_row()
        row.update(volume_id=vid, patient_id=f"p{i}", scan_id=f"p{i}_a", split=split, image="x", format="nifti",
                   source="synthetic", findings=findings, impressions="Stable.")
        rows.append(row)
        if i not in missing:
            shape = (shapes or {}).get(i, (40, 40, 20))
            hu = rng.integers(-1200, 1200, size=shape).astype(np.int16)
            pre = Preprocessed(root / "preprocessed", fmt)
            grid = np.diag([3.0, 3.0, 6.0, 1.0]) if affine is None else affine
            write_preprocessed(pre.volume(vid), hu, grid)
            if masks:
                write_preprocessed(pre.mask(vid, "lesion"), rng.integers(0, 3, size=shape).astype(np.uint8), grid)
                write_preprocessed(pre.mask(vid, "organ"), rng.integers(0, 6, size=shape).astype(np.uint8), grid)
        if i not in not_qc:
            qc.append(vid)
        sentences = [{"section": "impressions", "text": "Stable.", "start": 0, "end": 7, "lesion_ids": []}]
        if i not in no_findings:
            sentences = [{"section": "findings", "text": "Nodule in the right lung.", "start": 0, "end": 25,
                          "lesion_ids": [1]},
                         {"section": "findings", "text": "Heart normal.", "start": 26, "end": 39,
                          "lesion_ids": []}] + sentences
        lines.append(json.dumps({"volume_id": vid, "scan_id": f"p{i}_a", "split": split, "sentences": sentences}))
    write_manifest(root / "manifest.csv", rows)
    (root / "qc.csv").write_text("volume_id\n" + "".join(f"{v}\n" for v in qc))
    (root / "sentences.jsonl").write_text("\n".join(lines) + "\n")
    return root


def dataset(root, **kwargs):
    kwargs.setdefault("crop_size", CROP)
    return PretrainDataset(root / "manifest.csv", root / "sentences.jsonl", root / "preprocessed",
                           root / "qc.csv", **kwargs)


def test_filters_and_counts_each_reason(tmp_path, caplog):
    root = make_run(tmp_path, n=6, not_qc={0}, no_findings={1}, missing={2})
    with caplog.at_level(logging.INFO, logger="simcrop.data.datasets"):
        ds = dataset(root)
    assert [item["volume_id"] for item in ds.items] == ["vol3", "vol4", "vol5"]    # val vol6 not train
    assert ds.dropped == {"not_in_qc": 1, "no_findings_sentence": 1, "missing_file": 1}
    assert "kept 3" in caplog.text and "1 not in qc" in caplog.text
    assert len(dataset(root, split="val")) == 1


def test_sample_contract(tmp_path):
    ds = dataset(make_run(tmp_path), augment=False)
    sample = ds[0]
    assert set(sample) == {"volume_id", "scan_id", "image", "findings", "impressions", "sentences",
                           "mask_seed"}
    assert sample["image"].shape == (1, *CROP) and sample["image"].dtype == torch.float32
    assert sample["image"].min() >= -1.0 and sample["image"].max() <= 1.0
    assert sample["image"].min() == -1.0 and sample["image"].max() == 1.0       # HU clipped then / 1000
    assert [s["section"] for s in sample["sentences"]] == ["findings", "findings"]
    assert sample["findings"].startswith("Nodule") and sample["impressions"] == "Stable."
    assert torch.equal(ds[0]["image"], sample["image"])                         # eval: deterministic


def test_augmentation_is_a_function_of_epoch_and_index(tmp_path):
    ds = dataset(make_run(tmp_path), augment=True, seed=3)
    a, b, c = ds[(1, 0)]["image"], ds[(1, 0)]["image"], ds[(1, 1)]["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(dataset(tmp_path, augment=True, seed=3)[(1, 0)]["image"], a)    # fresh instance too


def test_volume_smaller_than_crop_is_padded_with_one_warning(tmp_path, caplog):
    ds = dataset(make_run(tmp_path, n=2, shapes={0: (20, 10, 6)}), augment=True)
    with caplog.at_level(logging.WARNING, logger="simcrop.data.datasets"):
        for epoch in range(3):
            assert ds[(0, epoch)]["image"].shape == (1, *CROP)
        ds[(1, 0)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "vol0" in warnings[0].getMessage() and "(20, 10, 6)" in warnings[0].getMessage()


def test_empty_dataset_names_the_files(tmp_path):
    root = make_run(tmp_path, n=2, no_findings={0}, not_qc={1})
    with pytest.raises(EmptyDatasetError) as err:
        dataset(root)
    message = str(err.value)
    for name in ("manifest.csv", "qc.csv", "sentences.jsonl", "1 not in qc", "1 no findings sentence"):
        assert name in message


def test_missing_inputs_are_named(tmp_path):
    root = make_run(tmp_path, n=1)
    (root / "qc.csv").unlink()
    with pytest.raises(FileNotFoundError, match="qc.csv"):
        dataset(root)


def _label_rows(root, labels: dict):
    """Give manifest rows labels: {volume_id: {name: 0/1}} (rows not named keep none)."""
    from simcrop.data.manifest import read_manifest
    frame = read_manifest(root / "manifest.csv")
    frame["labels"] = [json.dumps(labels[v]) if v in labels else "" for v in frame["volume_id"]]
    write_manifest(root / "manifest.csv", frame)


def test_labels_option_gives_the_rows_label_vector_and_drops_unlabelled(tmp_path, caplog):
    root = make_run(tmp_path, n=4)
    _label_rows(root, {"vol0": {"Emphysema": 1, "Lung nodule": 0, "Cardiomegaly": 1},
                       "vol1": {"Emphysema": 0, "Lung nodule": 1, "Cardiomegaly": 0},
                       "vol3": {"Cardiomegaly": 0, "Lung nodule": 0, "Emphysema": 1}})     # other key order
    plain = dataset(root, augment=False)
    assert "labels" not in plain[0] and "no_labels" not in plain.dropped and len(plain) == 4
    with caplog.at_level(logging.INFO, logger="simcrop.data.datasets"):
        ds = dataset(root, augment=False, labels=True)
    assert "1 no labels" in caplog.text
    assert ds.label_names == ["Emphysema", "Lung nodule", "Cardiomegaly"]     # the first labelled row's order
    assert [item["volume_id"] for item in ds.items] == ["vol0", "vol1", "vol3"] and ds.dropped["no_labels"] == 1
    vectors = [ds[i]["labels"] for i in range(3)]
    assert all(v.dtype == torch.float32 and v.shape == (3,) for v in vectors)
    assert [v.tolist() for v in vectors] == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert torch.equal(ds[0]["image"], plain[0]["image"])                   # the image is unchanged
    assert ds.fingerprint() != dataset(root, augment=False, labels=True, label_names=["Cardiomegaly"]).fingerprint()
    named = dataset(root, augment=False, labels=True, label_names=["Cardiomegaly", "Emphysema"])
    assert named[2]["labels"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="has labels but not"):
        dataset(root, labels=True, label_names=["Atelectasis"])
    _label_rows(root, {})
    with pytest.raises(EmptyDatasetError, match="4 no labels"):
        dataset(root, labels=True)


# ---------------------------------------------------------------- crop first, then read (the training cache)

def whole_volume_sample(ds, key) -> torch.Tensor:
    """What the dataset gave before the crop-first read: the whole volume (and maps) read and scaled, then
    the chain, seeded from the same (seed, epoch, index)."""
    index, epoch = key
    item = ds.items[index]
    image = load_preprocessed(item["path"], ds.hu_window)
    if ds.maps:
        pre = Preprocessed(ds.preprocessed.root)
        maps = [read_preprocessed(pre.mask(item["volume_id"], kind)) for kind in ("lesion", "organ")]
        image = torch.cat([image, *(torch.from_numpy(m.astype(np.float32))[None] for m in maps)])
    if ds.augment:
        seed_transform(ds.transform, sample_seed(ds.seed, epoch, index))
    return apply(ds.transform, image)


@pytest.mark.parametrize("augment", [True, False])
def test_both_formats_give_the_samples_the_whole_volume_chain_gives(tmp_path, augment):
    """Same seeds, same crops, flips, shifts and pads, bit for bit: from the cache or the NIfTI, crop first or
    whole volume first; label maps ride along; a volume under the crop is padded (reflect, or air where
    reflect cannot) as before."""
    shapes = {0: (40, 40, 20), 1: (20, 10, 6), 2: (33, 45, 17), 3: (60, 36, 30)}
    runs = {fmt: make_run(tmp_path / fmt, n=4, shapes=shapes, fmt=fmt, masks=True) for fmt in ("b2nd", "nifti")}
    assert (tmp_path / "b2nd" / "preprocessed" / "volumes" / "vol0.b2nd").exists()
    for pad_mode in ("reflect", "constant"):
        settings = dict(augment=augment, seed=5, maps=True, pad_mode=pad_mode, flip_prob=0.5, intensity_shift_prob=0.5)
        cache, nifti = (dataset(runs[fmt], **settings) for fmt in ("b2nd", "nifti"))
        assert cache.items[0]["path"].endswith(".b2nd") and nifti.items[0]["path"].endswith(".nii.gz")
        for key in [(i, epoch) for i in range(4) for epoch in range(3)]:
            a, b = cache[key], nifti[key]
            expected = whole_volume_sample(nifti, key)
            assert a["image"].shape == (1, *CROP)
            assert torch.equal(a["image"], expected[:1]) and torch.equal(b["image"], expected[:1]), (pad_mode, key)
            assert torch.equal(a["lesion_map"], expected[1].round().short())
            assert torch.equal(a["organ_map"], b["organ_map"])


def test_training_decodes_only_the_chunks_under_its_crop(tmp_path):
    """Every cache chunk the sample's crop does not touch (but chunk 0, which blosc2 decodes on opening) is
    spoilt before the sample is read: the sample still comes out, and equals the whole-volume chain on the
    intact data. The box is found independently, by running the old chain on a volume of voxel positions."""
    from cache_files import corrupt_chunks

    from simcrop.data.preprocessed_io import write_cache

    shape = (96, 80, 48)
    root = make_run(tmp_path, n=1, shapes={0: shape}, fmt="b2nd")
    path = Preprocessed(root / "preprocessed").volume("vol0")
    intact = read_preprocessed(path)
    positions = torch.arange(np.prod(shape), dtype=torch.float32).reshape(1, *shape)
    for augment, key in [(True, (0, 0)), (True, (0, 1)), (True, (0, 2)), (False, (0, 0))]:
        # zstd: a spoilt chunk then fails to decode. This noise volume is incompressible to lz4hc, which stores
        # such chunks raw, and a raw chunk decodes whatever it holds
        write_cache(path, intact, np.diag([3.0, 3.0, 6.0, 1.0]), chunks=(16, 16, 16), blocks=(8, 8, 8),
                    codec="zstd")
        ds = dataset(root, augment=augment, seed=1, scale_crop=(0.5, 0.7))
        expected = whole_volume_sample(ds, key)
        if augment:
            seed_transform(ds.transform, sample_seed(ds.seed, key[1], key[0]))
        used = apply(ds.transform, torch.cat([torch.zeros_like(positions), positions]))[1]   # channel 1: not shifted
        voxels = np.stack(np.unravel_index(used[used >= 0].round().long().numpy(), shape), 1)
        lo, hi = voxels.min(0), voxels.max(0) + 1
        assert corrupt_chunks(path, lo, hi) > 0
        with pytest.raises(ValueError, match="unreadable training cache"):
            read_preprocessed(path)                                   # the whole volume is no longer readable
        assert torch.equal(ds[key]["image"], expected[:1]), key
