# The one ondeck image: `ondeck serve`, `ondeck route` and `ondeck operator` all run from it.
# Non-root, and nothing is written below / at run time (the pods run with a read-only root
# filesystem; model packages come from a volume or an emptyDir filled by the init container).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ondeck ondeck
COPY serving serving
COPY operator operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin ondeck
USER 10001
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["ondeck"]
