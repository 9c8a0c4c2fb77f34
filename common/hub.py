"""RE-LAION-5B on the Hugging Face Hub: the token, the file list, the downloads, one-line errors.

The endpoint is whatever `huggingface_hub` is configured with (`HF_ENDPOINT` for a mirror).
Every Hub failure a user can fix becomes a `UserError` that says how; tokens never appear in
any message.
"""
from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_token, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from common.cli import UserError
from common.columns import RELAION_REPOS, RELAION_SUBSETS, RELAION_VARIANTS

PARQUET_SUFFIX = ".parquet"


def _network_errors() -> tuple[type[BaseException], ...]:
    """The "could not talk to the server" errors of whichever HTTP library this huggingface_hub uses
    (httpx2 for 2.x, httpx for 1.x, requests before)."""
    found = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found) or (ConnectionError,)


NETWORK_ERRORS = _network_errors()


def pick_subsets(values: list[str] | None) -> list[str]:
    """--subset's values (one or more, spaces or commas between, or `all`) in RE-LAION-5B's order;
    [] when none were given."""
    wanted = {v.strip() for value in values or () for v in value.split(",") if v.strip()}
    if "all" in wanted:
        wanted = (wanted - {"all"}) | set(RELAION_SUBSETS)
    unknown = sorted(wanted - set(RELAION_SUBSETS))
    if unknown:
        raise UserError(f"unknown subset {unknown[0]!r}: choose one or more of {', '.join(RELAION_SUBSETS)}, or all")
    return [s for s in RELAION_SUBSETS if s in wanted]


def repo_for(subset: str, variant: str, repo: str | None) -> str:
    """The dataset repo to read: --repo if given, else RE-LAION-5B's for this subset and variant."""
    if repo:
        return repo
    if subset not in RELAION_SUBSETS:
        raise UserError(f"unknown subset {subset!r}: choose one of {', '.join(RELAION_SUBSETS)}")
    if variant not in RELAION_VARIANTS:
        raise UserError(f"unknown variant {variant!r}: choose one of {', '.join(RELAION_VARIANTS)}")
    return RELAION_REPOS[(subset, variant)]


def resolve_token(flag: str | None) -> str:
    """--token, else HF_TOKEN, else the cached login; a UserError when there is none."""
    token = flag or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise UserError("no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login` "
                        "(RE-LAION-5B is gated: the token's account must have accepted its terms)")
    return token


def _page(repo: str) -> str:
    return f"{constants.ENDPOINT}/datasets/{repo}"


def _unreachable(e: Exception) -> UserError:
    return UserError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(e).__name__}): "
                     "check the network, or use --source with local copies of the files")


def check_token(api: HfApi, token: str) -> str:
    """The account name behind the token, or a UserError when the Hub refuses it."""
    try:
        return api.whoami(token=token).get("name", "?")
    except HfHubHTTPError as e:
        if e.response is not None and e.response.status_code == 401:
            raise UserError("the Hugging Face Hub refused this token (401): check --token or HF_TOKEN, "
                            "or log in again with `hf auth login`") from None
        raise
    except NETWORK_ERRORS as e:
        raise _unreachable(e) from None


def list_parquet_files(api: HfApi, repo: str, token: str) -> list[str]:
    """Every parquet file of the dataset repo, sorted: the order that fixes each file's part number."""
    try:
        files = api.list_repo_files(repo, repo_type="dataset", token=token)
    except RepositoryNotFoundError:
        raise UserError(f"dataset {repo} was not found on the Hub (or this token cannot see it): "
                        "check --repo / --subset") from None
    except NETWORK_ERRORS as e:
        raise _unreachable(e) from None
    found = sorted(f for f in files if f.endswith(PARQUET_SUFFIX))
    if not found:
        raise UserError(f"dataset {repo} has no parquet files: check --repo")
    return found


def check_access(repo: str, filename: str, token: str) -> None:
    """A HEAD on one file: a gated repo whose terms this account has not accepted fails here, once."""
    try:
        get_hf_file_metadata(hf_hub_url(repo, filename, repo_type="dataset"), token=token)
    except GatedRepoError:
        raise UserError(f"{repo} is gated and this account has not accepted its terms: open {_page(repo)}, "
                        "accept the conditions, then re-run") from None
    except NETWORK_ERRORS as e:
        raise _unreachable(e) from None


def download(repo: str, filename: str, token: str, folder: Path) -> tuple[Path, int]:
    """(local path, bytes fetched now): resumes a partial download, reuses a finished one."""
    target = folder / filename
    before = target.stat().st_size if target.exists() else 0
    try:
        path = Path(hf_hub_download(repo, filename, repo_type="dataset", token=token, local_dir=folder))
    except GatedRepoError:
        raise UserError(f"{repo} is gated and this account has not accepted its terms: open {_page(repo)}, "
                        "accept the conditions, then re-run") from None
    except (EntryNotFoundError, RevisionNotFoundError) as e:
        raise DownloadFailed(f"{type(e).__name__}: {filename} is no longer in {repo}") from None
    except (HfHubHTTPError, *NETWORK_ERRORS) as e:
        raise DownloadFailed(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    size = path.stat().st_size
    return path, (size if before != size else 0)


class DownloadFailed(Exception):
    """One file could not be fetched (server error, network): it is skipped and retried on a re-run."""
