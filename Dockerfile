FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir --no-deps .
USER nobody
CMD ["shotline", "--help"]
