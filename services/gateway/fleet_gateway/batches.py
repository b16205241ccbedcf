"""The OpenAI Batch API: ``/v1/files`` (purpose ``batch``) and ``/v1/batches``.

Nothing lives in the gateway process, so any gateway can answer any call:

* a file's bytes are kept in a JetStream Object Store (``<STEM>_GATEWAY_FILES``), its
  OpenAI file object and every batch's record in a KV bucket (``<STEM>_GATEWAY_BATCHES``);
* ``POST /v1/batches`` validates every line of the input file, then submits each line's
  Job durably on ``<p>.submit``; a job's id is derived from the batch id and the line's
  ``custom_id`` and is also its ``Nats-Msg-Id``, so a resubmission (a retried create, a
  second gateway) never runs a job twice;
* ``GET /v1/batches/{id}`` reads each job's stored Result by id (the RESULTS stream) to
  count requests; once every job has one, it writes the output and error files (ids
  derived from the batch id: two gateways finishing at once write the same files) and
  marks the batch ``completed``. Progress is therefore computed when asked, O(lines).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgspec
from aiohttp import web
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from fleet_gateway.errors import ApiError, error_for_result
from fleet_gateway.openai_chat import ChatRequest, chat_job, completion_body
from fleet_gateway.web_io import context, json_response, read_json
from fleet_shared.publish import MSG_ID_HEADER, stored_result
from fleet_shared.schema import Result, encode, result_decoder

#: the one endpoint a batch may call, and the one window accepted
ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"


class BatchLine(msgspec.Struct, frozen=True):
    custom_id: str
    method: str
    url: str
    body: msgspec.Raw


class CreateBatch(msgspec.Struct, frozen=True):
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


_line_decoder = msgspec.json.Decoder(BatchLine)
_chat_decoder = msgspec.json.Decoder(ChatRequest)
_create_decoder = msgspec.json.Decoder(CreateBatch)
_json = msgspec.json.Encoder()


class BatchStore:
    """The buckets, opened on first use (JetStream is there by then)."""

    def __init__(self) -> None:
        self._kv: KeyValue | None = None
        self._files: ObjectStore | None = None

    async def open(self, request: web.Request) -> tuple[KeyValue, ObjectStore]:
        if self._kv is None or self._files is None:
            fleet = context(request).fleet
            js = fleet.nc.jetstream()
            stem = fleet.subjects.health_bucket.removesuffix("_HEALTH")
            replicas = fleet.settings.stream_replicas
            self._kv = await js.create_key_value(bucket=f"{stem}_GATEWAY_BATCHES", replicas=replicas)
            self._files = await js.create_object_store(bucket=f"{stem}_GATEWAY_FILES", replicas=replicas)
        return self._kv, self._files


STORE = web.AppKey("batch_store", BatchStore)


def _store(request: web.Request) -> BatchStore:
    return request.app[STORE]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def job_id_of(batch_id: str, custom_id: str) -> str:
    """The job id of one line: the same for the same batch and custom_id, always."""
    return _digest("batch", batch_id, custom_id)


async def _record(kv: KeyValue, key: str, what: str) -> dict[str, Any]:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        raise ApiError("not_found", f"No such {what}: {key.partition('.')[2]}", code="not_found") from None
    return msgspec.json.decode(entry.value or b"{}")


async def _save_file(kv: KeyValue, files: ObjectStore, file_id: str, name: str, purpose: str, data: bytes) -> dict:
    await files.put(file_id, data)
    record = {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": name,
        "purpose": purpose,
        "status": "processed",
        "status_details": None,
    }
    await kv.put(f"file.{file_id}", _json.encode(record))
    return record


# -- /v1/files --------------------------------------------------------------------------


async def create_file(request: web.Request) -> web.Response:
    form = await request.post()
    purpose, upload = form.get("purpose"), form.get("file")
    if purpose != "batch":
        raise ApiError("invalid_request", "purpose must be 'batch' (the only one this gateway keeps)", param="purpose")
    if not isinstance(upload, web.FileField):
        raise ApiError("invalid_request", "a multipart 'file' part is required", param="file")
    data = upload.file.read()
    kv, files = await _store(request).open(request)
    file_id = f"file-{_digest('file', str(time.time_ns()), upload.filename or '')}"
    return json_response(await _save_file(kv, files, file_id, upload.filename or "input.jsonl", "batch", data))


async def get_file(request: web.Request) -> web.Response:
    kv, _ = await _store(request).open(request)
    return json_response(await _record(kv, f"file.{request.match_info['file_id']}", "file"))


async def file_content(request: web.Request) -> web.Response:
    kv, files = await _store(request).open(request)
    file_id = request.match_info["file_id"]
    await _record(kv, f"file.{file_id}", "file")
    return web.Response(body=await _content(files, file_id), content_type="application/octet-stream")


async def _content(files: ObjectStore, file_id: str) -> bytes:
    try:
        return (await files.get(file_id)).data or b""
    except NotFoundError:
        raise ApiError("not_found", f"No such file: {file_id}", code="not_found") from None


# -- /v1/batches ------------------------------------------------------------------------


def _lines(data: bytes) -> list[tuple[BatchLine, ChatRequest]]:
    """Every request of an input file, validated (a 400 naming the first bad line)."""
    out: list[tuple[BatchLine, ChatRequest]] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = _line_decoder.decode(raw)
            chat = _chat_decoder.decode(line.body)
        except msgspec.MsgspecError as exc:
            raise ApiError("invalid_request", f"input line {number}: {exc}", param="input_file_id") from None
        if line.method != "POST" or line.url != ENDPOINT:
            raise ApiError("invalid_request", f"input line {number}: only POST {ENDPOINT}", param="input_file_id")
        if line.custom_id in seen:
            raise ApiError("invalid_request", f"input line {number}: duplicate custom_id", param="input_file_id")
        seen.add(line.custom_id)
        out.append((line, chat))
    if not out:
        raise ApiError("invalid_request", "the input file has no requests", param="input_file_id")
    return out


async def create_batch(request: web.Request) -> web.Response:
    req = await read_json(request, _create_decoder)
    if req.endpoint != ENDPOINT:
        raise ApiError("invalid_request", f"endpoint must be {ENDPOINT}", param="endpoint")
    if req.completion_window != WINDOW:
        raise ApiError("invalid_request", f"completion_window must be {WINDOW}", param="completion_window")
    kv, files = await _store(request).open(request)
    await _record(kv, f"file.{req.input_file_id}", "file")
    lines = _lines(await _content(files, req.input_file_id))
    key = request.headers.get("idempotency-key") or str(time.time_ns())
    batch_id = f"batch_{_digest('batch', req.input_file_id, key)}"
    jobs = []
    for line, chat in lines:  # every line becomes a Job before any is sent
        job = chat_job(request, msgspec.structs.replace(chat, stream=False))
        jobs.append(msgspec.structs.replace(job, id=job_id_of(batch_id, line.custom_id)))
    fleet = context(request).fleet
    js = fleet.nc.jetstream()
    for job in jobs:  # durable; a second copy of an id is dropped by JetStream
        await js.publish(fleet.subjects.submit, encode(job), headers={MSG_ID_HEADER: job.id or ""})
    now = int(time.time())
    record = {
        "id": batch_id,
        "object": "batch",
        "endpoint": ENDPOINT,
        "errors": None,
        "input_file_id": req.input_file_id,
        "completion_window": WINDOW,
        "status": "in_progress",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": now,
        "expires_at": now + 86400,
        "completed_at": None,
        "cancelled_at": None,
        "request_counts": {"total": len(jobs), "completed": 0, "failed": 0},
        "metadata": req.metadata,
    }
    await kv.put(f"batch.{batch_id}", _json.encode(record))
    return json_response(record)


async def get_batch(request: web.Request) -> web.Response:
    return await _batch_progress(request, finish=False)


async def cancel_batch(request: web.Request) -> web.Response:
    """Stops the batch where it is: jobs already submitted still run in the fleet, but the
    output holds only those done by now; the others are in the error file as cancelled."""
    return await _batch_progress(request, finish=True)


async def _batch_progress(request: web.Request, *, finish: bool) -> web.Response:
    kv, files = await _store(request).open(request)
    record = await _record(kv, f"batch.{request.match_info['batch_id']}", "batch")
    if record["status"] == "in_progress":
        record = await _progress(request, kv, files, record, finish=finish)
    return json_response(record)


async def list_batches(request: web.Request) -> web.Response:
    kv, _ = await _store(request).open(request)
    try:
        keys = [k for k in await kv.keys() if k.startswith("batch.")]
    except NotFoundError:  # no keys at all
        keys = []
    records = [await _record(kv, key, "batch") for key in keys]
    records.sort(key=lambda r: r["created_at"], reverse=True)
    limit = int(request.query.get("limit", "20") or 20)
    page = records[: max(1, min(limit, 100))]
    return json_response(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(records) > len(page),
        }
    )


async def _progress(
    request: web.Request, kv: KeyValue, files: ObjectStore, record: dict[str, Any], *, finish: bool
) -> dict[str, Any]:
    """Count the stored Results; write the output files when all are in (or ``finish``)."""
    fleet = context(request).fleet
    js = fleet.nc.jetstream()
    lines = _lines(await _content(files, record["input_file_id"]))
    results: list[tuple[BatchLine, ChatRequest, Result | None]] = []
    for line, chat in lines:
        data = await stored_result(js, fleet.subjects, job_id_of(record["id"], line.custom_id))
        results.append((line, chat, result_decoder.decode(data) if data is not None else None))
    done = [r for _, _, r in results if r is not None]
    record["request_counts"] = {
        "total": len(results),
        "completed": sum(r.success for r in done),
        "failed": sum(not r.success for r in done) + (len(results) - len(done) if finish else 0),
    }
    if len(done) < len(results) and not finish:
        return record
    output, errors = _output_lines(request, results)
    batch_hex = record["id"].removeprefix("batch_")
    out_file = await _save_file(kv, files, f"file-{batch_hex}-output", "batch_output.jsonl", "batch_output", output)
    err_file = await _save_file(kv, files, f"file-{batch_hex}-errors", "batch_errors.jsonl", "batch_output", errors)
    now = int(time.time())
    record |= {
        "status": "cancelled" if finish else "completed",
        "output_file_id": out_file["id"],
        "error_file_id": err_file["id"] if errors else None,
        ("cancelled_at" if finish else "completed_at"): now,
    }
    await kv.put(f"batch.{record['id']}", _json.encode(record))
    return record


def _output_lines(
    request: web.Request, results: list[tuple[BatchLine, ChatRequest, Result | None]]
) -> tuple[bytes, bytes]:
    """(output JSONL, error JSONL) in the OpenAI batch output shape, in input order."""
    output: list[bytes] = []
    errors: list[bytes] = []
    board = context(request).fleet
    for line, chat, result in results:
        if result is None:
            cancelled = {"code": "batch_cancelled", "message": "the batch was cancelled before this request ended"}
            row = {"id": f"batch_req_{_digest(line.custom_id)}", "custom_id": line.custom_id, "response": None}
            errors.append(_json.encode({**row, "error": cancelled}))
            continue
        row_id = f"batch_req_{result.job_id}"
        if result.success:
            body = completion_body(request, chat, result)
            response = {"status_code": 200, "request_id": result.job_id, "body": body}
            output.append(
                _json.encode({"id": row_id, "custom_id": line.custom_id, "response": response, "error": None})
            )
        else:
            error = error_for_result(result, retry_after_s=board.retry_after_s(), now=time.time())
            response = {"status_code": error.status, "request_id": result.job_id, "body": error.openai_body()}
            errors.append(
                _json.encode({"id": row_id, "custom_id": line.custom_id, "response": response, "error": None})
            )
    return b"".join(o + b"\n" for o in output), b"".join(e + b"\n" for e in errors)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/files", create_file),
        web.get("/v1/files/{file_id}", get_file),
        web.get("/v1/files/{file_id}/content", file_content),
        web.post("/v1/batches", create_batch),
        web.get("/v1/batches", list_batches),
        web.get("/v1/batches/{batch_id}", get_batch),
        web.post("/v1/batches/{batch_id}/cancel", cancel_batch),
    ]
