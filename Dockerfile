FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir --no-deps .
# Compile the locator's numba kernels into the image (their on-disk cache beside the installed
# modules): at run time as nobody that folder is read-only, and each start would compile again.
RUN python -c "from services.locator.warmup import warm_up_kernels; warm_up_kernels()"
USER nobody
CMD ["shotline", "--help"]
