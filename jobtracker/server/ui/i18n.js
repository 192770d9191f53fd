// The page's words in Spanish and English, chosen from the browser's language.

const TEXT = {
  en: {
    skip: 'Skip to content',
    signInTitle: 'Sign in',
    signInHelp: 'Paste an API key. It stays in this tab only and is forgotten when the tab closes or you sign out.',
    keyLabel: 'API key',
    signIn: 'Sign in',
    signOut: 'Sign out',
    jobs: 'Jobs',
    jobsTitle: 'Your jobs',
    status: 'Status',
    allStatuses: 'Any status',
    label: 'Label (key:value)',
    labelHint: 'Several labels: separate with commas; all must match.',
    filter: 'Apply filters',
    clear: 'Clear',
    refresh: 'Refresh',
    openJob: 'Open a job by id',
    jobId: 'Job id',
    open: 'Open',
    loading: 'Loading…',
    noJobs: 'No jobs match.',
    noJobsYet: 'This key has no jobs yet.',
    newer: 'Newer',
    older: 'Older',
    page: (n) => `Page ${n}`,
    created: 'Created',
    updated: 'Updated',
    finished: 'Finished',
    age: (text) => `created ${text}`,
    progress: 'Progress',
    progressOf: (c, t) => `${c} of ${t}`,
    progressUnknown: 'not started',
    progressNone: 'no rows reported',
    filters: 'Filters and search',
    successful: 'Successful',
    failed: 'Failed',
    emailsSent: 'E-mails sent',
    emailsFailed: 'E-mails failed',
    internal: 'Internal',
    external: 'External',
    total: 'Processed',
    counters: 'Counters',
    countsLater: 'Known when the job succeeds.',
    errors: 'Row errors',
    errorsNone: 'No row errors.',
    errorsTotal: (n) => `${n} in total`,
    row: 'Row',
    email: 'E-mail',
    error: 'Error',
    history: 'History',
    historyEmpty: 'No events.',
    version: 'Version',
    type: 'Event',
    recorded: 'Recorded',
    details: 'Details',
    loadMore: 'Load more',
    previous: 'Previous',
    next: 'Next',
    cancel: 'Cancel job…',
    cancelTitle: 'Cancel this job?',
    cancelText: (id) => `Job ${id} will be asked to stop. A pending job ends at once; a running one ends when its worker stops.`,
    cancelYes: 'Cancel the job',
    cancelKeep: 'Keep it running',
    cancelAsked: 'Cancel requested: waiting for the worker to stop.',
    cancelDone: 'Cancel sent.',
    failure: 'Failure',
    live: 'Live',
    liveOff: 'Not live: press Refresh for news.',
    labels: 'Labels',
    back: 'All jobs',
    retry: 'Try again',
    offline: 'You are offline. What you see may be out of date.',
    unreachable: 'The server cannot be reached. Check the connection and try again.',
    e401: 'This API key was not accepted (missing, unknown or revoked). Sign in again with a valid key.',
    e403: 'This key may not see this job: it belongs to another key.',
    e404: 'No job has this id.',
    e410: 'This job has expired: its history was removed after it finished.',
    e409: 'The job has already finished.',
    eList: 'The job list is not available on this server. Open a job by its id instead.',
    eOther: (status, detail) => `The server answered ${status}: ${detail}`,
    statusNames: { PENDING: 'Pending', STARTED: 'Started', PROGRESS: 'In progress', SUCCESS: 'Succeeded', FAILURE: 'Failed' },
  },
  es: {
    skip: 'Saltar al contenido',
    signInTitle: 'Iniciar sesión',
    signInHelp: 'Pega una API key. Solo se guarda en esta pestaña y se olvida al cerrarla o al cerrar sesión.',
    keyLabel: 'API key',
    signIn: 'Entrar',
    signOut: 'Cerrar sesión',
    jobs: 'Jobs',
    jobsTitle: 'Tus jobs',
    status: 'Estado',
    allStatuses: 'Cualquier estado',
    label: 'Etiqueta (clave:valor)',
    labelHint: 'Varias etiquetas: sepáralas con comas; deben cumplirse todas.',
    filter: 'Aplicar filtros',
    clear: 'Limpiar',
    refresh: 'Actualizar',
    openJob: 'Abrir un job por su id',
    jobId: 'Id del job',
    open: 'Abrir',
    loading: 'Cargando…',
    noJobs: 'Ningún job coincide.',
    noJobsYet: 'Esta key aún no tiene jobs.',
    newer: 'Más recientes',
    older: 'Más antiguos',
    page: (n) => `Página ${n}`,
    created: 'Creado',
    updated: 'Actualizado',
    finished: 'Terminado',
    age: (text) => `creado ${text}`,
    progress: 'Avance',
    progressOf: (c, t) => `${c} de ${t}`,
    progressUnknown: 'sin empezar',
    progressNone: 'sin filas informadas',
    filters: 'Filtros y búsqueda',
    successful: 'Exitosos',
    failed: 'Fallidos',
    emailsSent: 'E-mails enviados',
    emailsFailed: 'E-mails fallidos',
    internal: 'Internos',
    external: 'Externos',
    total: 'Procesados',
    counters: 'Contadores',
    countsLater: 'Se conocen cuando el job termina con éxito.',
    errors: 'Errores por fila',
    errorsNone: 'Sin errores por fila.',
    errorsTotal: (n) => `${n} en total`,
    row: 'Fila',
    email: 'E-mail',
    error: 'Error',
    history: 'Historial',
    historyEmpty: 'Sin eventos.',
    version: 'Versión',
    type: 'Evento',
    recorded: 'Registrado',
    details: 'Detalles',
    loadMore: 'Cargar más',
    previous: 'Anterior',
    next: 'Siguiente',
    cancel: 'Cancelar job…',
    cancelTitle: '¿Cancelar este job?',
    cancelText: (id) => `Se pedirá al job ${id} que se detenga. Un job pendiente termina de inmediato; uno en curso, cuando su worker se detenga.`,
    cancelYes: 'Cancelar el job',
    cancelKeep: 'Seguir ejecutando',
    cancelAsked: 'Cancelación pedida: esperando a que el worker se detenga.',
    cancelDone: 'Cancelación enviada.',
    failure: 'Fallo',
    live: 'En vivo',
    liveOff: 'Sin actualización en vivo: pulsa Actualizar.',
    labels: 'Etiquetas',
    back: 'Todos los jobs',
    retry: 'Reintentar',
    offline: 'Sin conexión. Lo que ves puede estar desactualizado.',
    unreachable: 'No se puede contactar con el servidor. Revisa la conexión y reintenta.',
    e401: 'Esta API key no fue aceptada (falta, es desconocida o fue revocada). Vuelve a entrar con una key válida.',
    e403: 'Esta key no puede ver este job: pertenece a otra key.',
    e404: 'No existe un job con este id.',
    e410: 'Este job expiró: su historial se borró después de terminar.',
    e409: 'El job ya terminó.',
    eList: 'La lista de jobs no está disponible en este servidor. Abre un job por su id.',
    eOther: (status, detail) => `El servidor respondió ${status}: ${detail}`,
    statusNames: { PENDING: 'Pendiente', STARTED: 'Iniciado', PROGRESS: 'En progreso', SUCCESS: 'Completado', FAILURE: 'Fallido' },
  },
};

/** The language the page speaks: Spanish for any `es*` browser language, English otherwise. */
export const lang = (navigator.language || 'en').toLowerCase().startsWith('es') ? 'es' : 'en';
export const t = TEXT[lang];

const numbers = new Intl.NumberFormat(lang);
const relative = new Intl.RelativeTimeFormat(lang, { numeric: 'auto' });
const dates = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'medium' });

/** A count for people: grouped digits, or a dash when unknown. */
export function num(value) {
  return Number.isFinite(value) ? numbers.format(value) : '—';
}

/** An RFC 3339 time as a local date and time. */
export function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso ?? '—') : dates.format(d);
}

/** How long ago an RFC 3339 time was ("3 minutes ago"). */
export function ago(iso, now = Date.now()) {
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  if (!Number.isFinite(seconds)) return '—';
  const steps = [[60, 'second'], [60, 'minute'], [24, 'hour'], [30, 'day'], [12, 'month']];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) return relative.format(value, unit);
    value = Math.round(value / size);
  }
  return relative.format(value, 'year');
}

/** A status for people, e.g. "In progress". */
export function statusName(status) {
  return t.statusNames[status] || String(status);
}

/** The progress text of a job that reported no numbers: not started yet, or none reported. */
export function nothingYet(status) {
  return status === 'PENDING' ? t.progressUnknown : t.progressNone;
}
