// One MongoDB user per service, allowed to read and write its own database only. Run once by
// the mongo image at the first start (as the administrator); the passwords come from .env
// through the container's environment.
const admin = db.getSiblingDB("admin");
for (const service of ["identity", "dossier", "consent", "audit", "notify", "ingest", "messaging", "agenda"]) {
  admin.createUser({
    user: service,
    pwd: process.env[`DMP_MONGO_${service.toUpperCase()}_PASSWORD`],
    roles: [{ role: "readWrite", db: service }],
  });
}
