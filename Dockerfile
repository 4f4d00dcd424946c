# GamePlaza services image: bridge, api, simulator and the `plaza` CLI.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# pg_dump for `plaza backup` of the compose PostgreSQL (bookworm's client is 15, as the server)
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt README.md ./
COPY plaza ./plaza
COPY bridge ./bridge
COPY api ./api
COPY venue ./venue
COPY device-firmware-sim ./device-firmware-sim
COPY broker-config ./broker-config
RUN pip install -c constraints.txt . && useradd --uid 10001 plaza && mkdir /data && chown plaza /data
USER plaza
ENV PLAZA_DATA_DIR=/data
EXPOSE 8000
ENTRYPOINT ["plaza"]
CMD ["--help"]
