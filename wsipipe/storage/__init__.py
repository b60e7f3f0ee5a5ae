"""Object storage: which inputs and outputs are fsspec URLs, and the file system that reads them.

A slide, a checkpoint or an output directory may be a URL (``s3://bucket/slides/``, ``gs://...``,
``https://host/slide.tif``) in every stage (tile, infer, aggregate, evaluate, evaluate-patches,
explain, export, report, train), in ``wsipipe view`` (a run directory at a URL prefix) and as a
pipeline's run directory (its lock is an object with a lease, written with the conditional
requests :func:`create_object`, :func:`replace_object` and :func:`delete_object` below; S3
and GCS only). Stages carry such a location
as a :class:`~pathlib.Path` like any other (``Path("s3://b/x.tif")`` keeps its name, stem and
parent); :func:`as_url` recognises it again (``scheme:/rest`` with a scheme of two or more
letters, so ``C:/`` stays a path) and gives back the URL.

Credentials and endpoints come from the standard environment of the file system's library
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` ... for
s3fs; ``GOOGLE_APPLICATION_CREDENTIALS`` for gcsfs), or from :func:`set_storage_options`
(this process only: Dask workers take the environment). They are never written anywhere: URLs are logged and
recorded as given, which must not hold secrets (:func:`redact_url` strips a ``user:password@``).

fsspec and its protocol packages (s3fs for ``s3://``) are imported on first use only. At ``s3://``
a store's PUTs (:func:`put_objects`), a slide's reads (:func:`open_input`, :func:`object_info`,
:func:`url_reader`) and a store's listing (:func:`list_objects`) go through obstore where it
can be set up as s3fs is (:func:`s3_client` says which client and why; ``WSIPIPE_S3_CLIENT=s3fs``
forces s3fs), so that tiling from and to S3 never loads s3fs and botocore.
"""

from wsipipe.storage._clients import client_fingerprint, configured_fs, fs_options, url_fs
from wsipipe.storage._fast_reads import url_reader
from wsipipe.storage._files import (
    download_tree,
    is_dir,
    list_dir,
    list_files,
    mirrored,
    open_output,
    output_exists,
    read_bytes,
    readable,
    remove_output,
    upload_tree,
    writable,
    writable_dir,
)
from wsipipe.storage._objects import (
    ConditionalWriteError,
    create_object,
    delete_object,
    list_objects,
    put_objects,
    read_object,
    replace_object,
)
from wsipipe.storage._obstore import S3_CLIENT_ENV, s3_client
from wsipipe.storage._reading import input_size, object_info, open_input
from wsipipe.storage._retry import RetryPolicy, listing_failure, retry_policy, set_retry_policy, storage_error
from wsipipe.storage._urls import as_url, is_url, location, redact_url, set_storage_options, storage_options

__all__ = [
    "S3_CLIENT_ENV",
    "ConditionalWriteError",
    "RetryPolicy",
    "as_url",
    "client_fingerprint",
    "configured_fs",
    "create_object",
    "delete_object",
    "download_tree",
    "fs_options",
    "input_size",
    "is_dir",
    "is_url",
    "list_dir",
    "list_files",
    "list_objects",
    "listing_failure",
    "location",
    "mirrored",
    "object_info",
    "open_input",
    "open_output",
    "output_exists",
    "put_objects",
    "read_bytes",
    "read_object",
    "readable",
    "redact_url",
    "remove_output",
    "replace_object",
    "retry_policy",
    "s3_client",
    "set_retry_policy",
    "set_storage_options",
    "storage_error",
    "storage_options",
    "upload_tree",
    "url_fs",
    "url_reader",
    "writable",
    "writable_dir",
]
