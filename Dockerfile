# One image for the worker and the front door (the command differs).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY models models
COPY workflows workflows
COPY activities activities
COPY triage triage
COPY analysis analysis
COPY diagnosis diagnosis
COPY frontdoor frontdoor
COPY config config
COPY devstack devstack
COPY evals evals
COPY remediation remediation
COPY reports reports
COPY runbooks runbooks
COPY worker.py starter.py ./
COPY policy.yaml ./
RUN pip install --no-cache-dir -e . && useradd --system --uid 10001 agent
USER agent
CMD ["python", "worker.py"]
