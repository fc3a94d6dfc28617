# satwatt central system. Build: docker build -t satwatt .
# Run: docker run -p 8180:8180 -p 10009:10009 -v satwatt-data:/data satwatt
# (10009: the embedded Lightning simnet, for cars that pay from outside the container; its certificate
# and the cars' macaroons are in the volume, under simnet/)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CSMS_HOST=0.0.0.0 CSMS_PORT=8180 CSMS_DATA_DIR=/data \
    CSMS_SIMNET_HOST=0.0.0.0 CSMS_SIMNET_PORT=10009

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
EXPOSE 8180 10009
# asks the port (and scheme) the settings give csms serve, so CSMS_PORT=... at run time is followed
HEALTHCHECK --interval=30s --timeout=10s CMD ["python", "-m", "csms.healthcheck"]
CMD ["csms", "serve"]
