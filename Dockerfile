# fairbot: build with `docker build -t fairbot .`,
# run with `docker run --env-file .env -v fairbot-data:/data fairbot`.
# The image holds no secret: configuration comes from the environment at run time.

# Node 20 by default; 22 and 24 pass the test suite too (`npm run test:node -- 24`):
# `docker build --build-arg NODE_VERSION=24 -t fairbot .`
ARG NODE_VERSION=20

# ---- build: dependencies (dev included), TypeScript build, then prune to production ----
FROM node:${NODE_VERSION}-bookworm-slim AS build
# better-sqlite3 compiles from source when no prebuilt binary can be fetched.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm ci` installs from the lockfile and runs `prepare`, which builds dist/ (needs typescript).
RUN npm ci \
 && test -f dist/main.js \
 && npm prune --omit=dev

# ---- runtime: only dist/, the production node_modules and package.json ----
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    DATA_DIR=/data \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Durable state (the GPU server the bot started) lives in /data, writable by `node` only.
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]
USER node
# /metrics and /healthz (METRICS_PORT): on by default in the image, for the HEALTHCHECK below.
ENV METRICS_PORT=9464
# Slack HTTP mode listens on SLACK_PORT (default 3000); Discord and Socket Mode need no inbound port.
EXPOSE 3000 9464
# Healthy while the bot is connected to its chat platforms (/healthz answers 503 with the reason when not).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD node -e "const p=process.env.METRICS_PORT;if(!p)process.exit(0);fetch('http://127.0.0.1:'+p+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"

# `npm start` is `node dist/main.js`: no build at run time.
CMD ["npm", "start"]
