# The one image behind every Airflow component and the evidence API in docker-compose.yaml.
FROM python:3.11-slim-bookworm
RUN pip install --no-cache-dir uv && apt-get update \
    && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/zerodoc
COPY pyproject.toml uv.lock README.md ./
COPY plugins ./plugins
RUN uv sync --frozen --no-dev
COPY . .
ENV PATH=/opt/zerodoc/.venv/bin:$PATH
