# satwatt central system. Build: docker build -t satwatt .   Run: docker run -p 8180:8180 -v satwatt-data:/data satwatt
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CSMS_HOST=0.0.0.0 CSMS_PORT=8180 CSMS_DATA_DIR=/data

# tzdata: time-of-use tariffs name IANA zones
RUN apt-get update && apt-get install -y --no-install-recommends tzdata && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY csms ./csms
COPY lightning ./lightning
COPY chargepoint_sim ./chargepoint_sim
COPY migrations ./migrations
RUN pip install --no-cache-dir -c constraints.txt . && useradd --create-home satwatt \
    && mkdir -p /data && chown satwatt /data

USER satwatt
VOLUME /data
EXPOSE 8180
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8180/healthz')" || exit 1
CMD ["csms", "serve"]
