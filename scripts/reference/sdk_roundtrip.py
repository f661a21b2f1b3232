"""Drives `dn serve` with the reference platform's own Python SDK (PyPI `dreadnode`, its ApiClient).

Creates the docs' example job from a CreateTinkerSFTJobRequest, lists, gets, cancels and retries it, reads
its logs, artifacts and the catalog, and checks the SDK's error types for 401/404/409. Every response goes
through the SDK's pydantic models. Usage: sdk_roundtrip.py BASE_URL API_KEY OTHER_ORG_KEY MODEL
"""

import sys

from dreadnode.app.api.client import ApiClient, AuthenticationError, ConflictError, NotFoundError
from dreadnode.app.api.models import (
    CapabilityRef,
    CreateTinkerSFTJobRequest,
    DatasetRef,
    TinkerSFTJobConfig,
    TrainingCatalogResponse,
    TrainingJob,
    TrainingJobArtifacts,
    TrainingJobList,
    TrainingJobLogList,
)

base_url, api_key, other_key, model = sys.argv[1:5]
ORG, WS = "default", "main"
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    checks += 1
    print(f"ok: {what}")


def raises(error_type, fn, what):
    try:
        fn()
    except error_type as e:
        check(True, f"{what} -> {error_type.__name__}: {e}")
        return
    raise SystemExit(f"FAILED: {what} did not raise {error_type.__name__}")


client = ApiClient(base_url, api_key=api_key)
request = CreateTinkerSFTJobRequest(
    model=model,
    capability_ref=CapabilityRef(name="support-agent", version="1.0.0"),
    config=TinkerSFTJobConfig(
        dataset_ref=DatasetRef(name="support-demos", version="0.1.0"),
        eval_dataset_ref=DatasetRef(name="support-eval", version="0.1.0"),
        steps=100,
        batch_size=8,
        learning_rate=1e-4,
        lora_rank=16,
    ),
)
job = client.create_training_job(ORG, WS, request)
check(isinstance(job, TrainingJob) and job.status == "queued", f"create -> {job.id} {job.status}")
check(job.backend == "tinker" and job.trainer_type == "sft", "backend/trainer_type")
check(job.dataset_ref.name == "support-demos" and job.capability.name == "support-agent", "refs")
check(job.config["steps"] == 100 and job.config["lora_rank"] == 16 and job.config["batch_size"] == 8, "config")
check(job.created_at is not None and job.completed_at is None, "datetimes parse")

second = client.create_training_job(ORG, WS, request.model_dump(mode="json", exclude_none=True))
listed = client.list_training_jobs(ORG, WS, page=1, page_size=1)
check(isinstance(listed, TrainingJobList) and listed.total == 2 and len(listed.items) == 1, "list pages")
check(listed.items[0].id == second.id, "list is newest first")
queued = client.list_training_jobs(ORG, WS, status="queued", backend="tinker", trainer_type="sft")
check(queued.total == 2, "list filters")

got = client.get_training_job(ORG, WS, job.id)
check(got.id == job.id and got.model == model, "get")
cancelled = client.cancel_training_job(ORG, WS, job.id)
check(cancelled.status == "cancelled" and cancelled.cancel_requested_at is not None, "cancel a queued job")
retried = client.retry_training_job(ORG, WS, job.id)
check(retried.status == "queued" and retried.id == job.id, "retry")
raises(ConflictError, lambda: client.retry_training_job(ORG, WS, job.id), "retry of a queued job")

logs = client.list_training_job_logs(ORG, WS, job.id)
check(isinstance(logs, TrainingJobLogList) and logs.items[0].message == "job queued", "logs")
check(all(e.level in ("debug", "info", "warning", "error") for e in logs.items), "log levels")
artifacts = client.get_training_job_artifacts(ORG, WS, job.id)
check(isinstance(artifacts, TrainingJobArtifacts), "artifacts")
catalog = client.get_training_catalog(limit=5)
check(isinstance(catalog, TrainingCatalogResponse) and catalog.total >= 1, "catalog")
check(catalog.models[0].tinker_id == model and "sft" in catalog.models[0].supported_algorithms, "catalog model")

raises(NotFoundError, lambda: client.get_training_job(ORG, WS, "no-such-job"), "get of a missing job")
other = ApiClient(base_url, api_key=other_key)
raises(NotFoundError, lambda: other.get_training_job(ORG, WS, job.id), "another org's key")
raises(AuthenticationError, lambda: ApiClient(base_url, api_key="dn_wrong").list_training_jobs(ORG, WS), "bad key")
try:
    client.create_training_job(ORG, WS, {**request.model_dump(mode="json", exclude_none=True), "colour": "red"})
    raise SystemExit("FAILED: unknown field accepted")
except RuntimeError as e:
    check("colour" in str(e), f"unknown field refused: {e}")

print(f"{checks} passed, 0 failed")
