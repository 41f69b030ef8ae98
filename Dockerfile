# One image for the hpo controller and its Ray GPU workers: the project with the `workers`
# extra (Ray, PyTorch from PyPI, whose Linux wheels carry CUDA, transformers) and `gp`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install .` needs (pyproject's readme and the packages it lists), so that a
# local .venv, hpo.db or .git never ends up in the image.
WORKDIR /build
COPY pyproject.toml README.md ./
COPY hpo ./hpo
COPY api ./api
COPY search_spaces ./search_spaces
COPY workers ./workers
COPY dashboards ./dashboards
COPY controller ./controller
RUN pip install ".[workers,gp]" && rm -rf /build

# Run as an unprivileged user; the working directory is where the default SQLite file
# (hpo.db) goes when HPO_DATABASE_URL is not set.
RUN useradd --system --create-home --home-dir /var/lib/hpo --uid 10001 hpo
USER hpo
WORKDIR /var/lib/hpo

EXPOSE 8000
ENTRYPOINT ["hpo"]
CMD ["serve", "--host", "0.0.0.0"]
