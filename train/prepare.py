"""What one run trains and evaluates on, from ``--data``: the training set, the evaluation
batches and the images of the result grids.

The built-in data and .npz files are small and held in memory (``ArrayDataset``);
``--data DIR`` streams random crops from disk (``unsupseg.train.folder``) and evaluates
up to ``--eval-images`` whole images each epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from unsupseg.core.data import builtin_splits, load_npz, normalize_stack
from unsupseg.core.errors import DataError
from unsupseg.core.files import MaskIndex
from unsupseg.core.normalize import Normalization
from unsupseg.core.padding import pad_to_multiple
from unsupseg.train import distributed
from unsupseg.train.augment import apply_augment, build_augment
from unsupseg.train.config import TrainConfig
from unsupseg.train.folder import (
    EpochSampler,
    FileIndex,
    FolderCropDataset,
    load_eval_images,
    noisier_input,
)
from unsupseg.train.model import SIZE_MULTIPLE

GRID_IMAGES = 10  # images per result grid (plots/results_*.png), as in the seed notebook


class ArrayDataset(Dataset):
    """Raw images (N, H, W) and masks -> (input, image, mask), each (1, H, W).

    ``image`` is the normalised image the loss is measured on; ``input`` is what the
    network sees: the same image, or a noisier copy of it during training.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        norm: Normalization,
        augment: str = "none",
        input_noise: float = 0.0,
    ):
        self.raw = images
        self.norm = norm
        self.images = torch.from_numpy(normalize_stack(images, norm)).unsqueeze(1)  # (N, 1, H, W)
        self.masks = torch.from_numpy(np.ascontiguousarray(masks).astype(bool)).unsqueeze(1)
        self.transform = build_augment(augment) if augment != "none" else None
        self.input_noise = input_noise

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img, msk = self.images[i], self.masks[i]
        inp = img
        if self.input_noise > 0:
            inp = torch.from_numpy(noisier_input(self.raw[i], self.norm, self.input_noise))[None]
        if self.transform is not None:
            inp, img, msk = apply_augment(self.transform, inp, img, msk)
        return inp, img, msk


@dataclass
class PreparedData:
    train: Dataset
    test: list  # list of (image (1,1,H,W) batches, mask) tensors ready for evaluation
    train_eval: list  # the training images in the same form, for the final train IoU
    has_masks: bool
    source: str
    grid_train: tuple[np.ndarray, np.ndarray] = field(default=None)  # 10 images + masks for the grid
    grid_test: tuple[np.ndarray, np.ndarray] = field(default=None)
    sampler: Sampler | None = None  # the training order (None: shuffle the whole data set each epoch)
    index: FileIndex | None = None  # --data DIR: the file list, removed by close()

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


def prepare_data(
    cfg: TrainConfig,
    norm: Normalization,
    log: Callable[[str], None],
    dist_ctx: distributed.DistContext | None = None,
    device: torch.device | None = None,
) -> PreparedData:
    """The training set, the evaluation images and the figure grids for ``cfg.data``."""
    dist_ctx = dist_ctx or distributed.DistContext()
    device = device or torch.device("cpu")
    if cfg.data is None or str(cfg.data).endswith(".npz"):
        return _prepare_arrays(cfg, norm)
    return _prepare_folder(cfg, norm, log, dist_ctx, device)


def make_loader(
    data: PreparedData, cfg: TrainConfig, dist_ctx: distributed.DistContext, generator: torch.Generator
) -> tuple[DataLoader, Sampler | None]:
    """The training DataLoader and its sampler (None: the loader shuffles with ``generator``).

    A folder is read by ``cfg.workers`` processes; in-memory data by this one. Under DDP
    each rank takes its share of the in-memory data (``DistributedSampler``).
    """
    sampler = data.sampler
    if sampler is None and dist_ctx.enabled:
        sampler = DistributedSampler(
            data.train, dist_ctx.world_size, dist_ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
    streamed = data.sampler is not None
    loader = DataLoader(
        data.train,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        generator=generator,
        num_workers=cfg.workers if streamed else 0,
        persistent_workers=cfg.workers > 0 and streamed,
    )
    return loader, sampler


# ----------------------------------------------------------------------------- in memory
def _prepare_arrays(cfg: TrainConfig, norm: Normalization) -> PreparedData:
    """The built-in generator or an .npz: both splits in memory, evaluated in batches."""
    if cfg.data is None:
        splits = builtin_splits(cfg.seed)
        source = "built-in generator"
    else:
        splits = load_npz(cfg.data)
        source = str(cfg.data)
    xte = normalize_stack(splits["image_test"], norm)
    ytr, yte = splits["mask_train"].astype(bool), splits["mask_test"].astype(bool)
    train = ArrayDataset(splits["image_train"], ytr, norm, cfg.augment, cfg.input_noise)
    xtr = train.images[:, 0].numpy()
    return PreparedData(
        train=train,
        test=_batches(xte, yte, cfg.batch_size),
        train_eval=_batches(xtr, ytr, cfg.batch_size),
        has_masks=True,
        source=source,
        grid_train=_grid_pick(xtr, ytr),
        grid_test=_grid_pick(xte, yte),
    )


def _batches(images: np.ndarray, masks: np.ndarray, size: int) -> list:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)  # (N, 1, H, W)
    y = torch.from_numpy(np.ascontiguousarray(masks).astype(bool)).unsqueeze(1)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _grid_pick(images: np.ndarray, masks: np.ndarray, n: int = GRID_IMAGES):
    idx = np.linspace(0, len(images) - 1, min(n, len(images))).astype(int)
    return images[idx], masks[idx]


# ----------------------------------------------------------------------------- a folder
def _prepare_folder(
    cfg: TrainConfig,
    norm: Normalization,
    log: Callable[[str], None],
    dist_ctx: distributed.DistContext,
    device: torch.device,
) -> PreparedData:
    """``--data DIR``: random crops streamed from disk, whole evaluation images in memory."""
    path = Path(cfg.data)
    _check_folder_options(cfg, path)
    mask_index = _mask_index(cfg.masks, log)
    index = FileIndex(path)
    try:
        distributed.check_same(dist_ctx, len(index), f"the number of images in {path}", device)
        evals = load_eval_images(index, norm, mask_index, cfg.eval_images, log)
        length = max(cfg.samples_per_epoch, cfg.batch_size * dist_ctx.world_size)  # over all ranks
        sampler = EpochSampler(len(index), length, cfg.seed, dist_ctx.rank, dist_ctx.world_size)
    except BaseException:
        index.close()
        raise
    has_masks = any(m is not None for _, _, m in evals)
    if mask_index is not None and not has_masks:
        log(
            f"warning: no mask in {cfg.masks} matches the {len(evals)} evaluation image(s) from {path}; "
            "IoU will not be reported"
        )
    test = _whole_images(evals)
    grid = _folder_grid(evals, cfg.crop)
    log(
        f"{len(index)} image file(s) in {path}, streamed; {len(evals)} evaluated each epoch"
        + (f", masks from {cfg.masks}" if has_masks else "")
    )
    dataset = FolderCropDataset(
        index,
        cfg.crop,
        norm,
        cfg.augment,
        cfg.input_noise,
        masks=mask_index if has_masks else None,
        seed=cfg.seed,
        cache_mb=cfg.cache_mb,
        workers=cfg.workers,
        log=log,
    )
    return PreparedData(
        train=dataset,
        test=test,
        train_eval=test,  # folder: evaluation images are trained on (as crops) and evaluated whole
        has_masks=has_masks,
        source=str(path),
        grid_train=grid,
        grid_test=grid,
        sampler=sampler,
        index=index,
    )


def _check_folder_options(cfg: TrainConfig, path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass an .npz file or a folder of images to --data")
    if not path.is_dir():
        raise DataError(f"{path}: --data takes an .npz file or a folder of images")
    if cfg.masks is not None and not Path(cfg.masks).is_dir():
        raise DataError(f"{cfg.masks}: --masks must be a folder of mask images")
    if cfg.crop % SIZE_MULTIPLE or cfg.crop <= 0:
        raise DataError(f"--crop {cfg.crop}: must be a positive multiple of {SIZE_MULTIPLE}")
    if cfg.eval_images < 1:
        raise DataError(f"--eval-images {cfg.eval_images}: must be at least 1")


def _mask_index(masks: str | None, log: Callable[[str], None]) -> MaskIndex | None:
    if masks is None:
        return None
    mask_index = MaskIndex(Path(masks))
    if len(mask_index) == 0:
        log(f"warning: no mask images in {masks}; IoU will not be reported")
        return None
    return mask_index


def _whole_images(evals: list) -> list:
    """Evaluation entries (image (1,1,H',W'), mask, (h, w, has_mask)), padded to a multiple of 8.

    IoU counts on images that have a mask; the others get an all-false mask and are left
    out of IoU by the flag kept alongside.
    """
    test = []
    for _, image, mask in evals:
        h, w = image.shape
        img = pad_to_multiple(image, SIZE_MULTIPLE)
        m = np.zeros(img.shape, dtype=bool)
        if mask is not None:
            m[:h, :w] = mask
        test.append(
            (
                torch.from_numpy(np.ascontiguousarray(img))[None, None],
                torch.from_numpy(m)[None, None],
                (h, w, mask is not None),
            )
        )
    return test


def _folder_grid(evals: list, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks for the result grids: evaluation images spread over the folder, cut
    or edge-padded to ``side`` x ``side``."""
    gi = np.linspace(0, len(evals) - 1, min(GRID_IMAGES, len(evals))).astype(int)
    grid_imgs, grid_msks = [], []
    for i in gi:
        _, im, mk = evals[i]
        mk = mk if mk is not None else np.zeros(im.shape, bool)
        im = np.pad(im, ((0, max(0, side - im.shape[0])), (0, max(0, side - im.shape[1]))), mode="edge")
        mk = np.pad(mk, ((0, max(0, side - mk.shape[0])), (0, max(0, side - mk.shape[1]))))
        grid_imgs.append(im[:side, :side])
        grid_msks.append(mk[:side, :side])
    return np.stack(grid_imgs), np.stack(grid_msks)
